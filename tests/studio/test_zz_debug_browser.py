import time, pytest
from tests.studio.browser_helpers import astronaut_png, open_tab
pytestmark = pytest.mark.browser

def test_debug(studio, page, tmp_path):
    p = astronaut_png(tmp_path)
    open_tab(page, studio["url"], "Try-on", "#tryon-person")
    try:
        with page.expect_file_chooser(timeout=5000) as fc:
            page.locator("#tryon-person button[aria-label='Upload']").click()
        fc.value.set_files(str(p))
        print("chooser ok")
    except Exception as e:
        print("chooser failed", e)
    for i in range(6):
        time.sleep(1)
        print(i, page.locator("#tryon-person .empty").count())
    page.screenshot(path="/tmp/qa/debug.png", full_page=True)
