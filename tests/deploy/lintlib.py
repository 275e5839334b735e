"""Shared by the deployment-file checks (tests/deploy/*_lint.py, run by check.sh): where the
files are, YAML loading, and collecting problems so that one run reports all of them."""

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"


class Problems:
    """Problems found by one check; `finish` prints them and exits 1 if there are any."""

    def __init__(self, check):
        self.check = check
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")

    def require(self, condition, where, message):
        if not condition:
            self.add(where, message)
        return condition

    def finish(self, summary):
        if self.items:
            for item in self.items:
                print(f"[{self.check}] FAIL {item}", file=sys.stderr)
            sys.exit(1)
        print(f"[{self.check}] ok: {summary}")


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def rel(path):
    return pathlib.Path(path).resolve().relative_to(ROOT).as_posix()
