"""``python -m training``: list the registered training methods and their trainer commands."""

from __future__ import annotations

from training.runner import METHODS


def main() -> int:
    for name, spec in sorted(METHODS.items()):
        print(f"{name:24s} python -m {spec.module} --config FILE.yaml [--run-id ID --store DB]   ({spec.config_class})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
