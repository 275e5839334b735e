"""Checks infra/deploy/Dockerfile beyond hadolint: a Rust 1.95 builder on bookworm that
builds the services' packages with --locked, a bookworm-slim runtime that runs as uid 10001,
the four binaries (their names taken from the packages' Cargo.toml) in /usr/local/bin, exec-
form CMD/ENTRYPOINT, and a .dockerignore beside it that keeps target/, .data/ and .git/ out."""

import re
import tomllib

from lintlib import DEPLOY, ROOT, Problems, rel

DOCKERFILE = DEPLOY / "Dockerfile"
PACKAGES = ("command-api", "projections", "query-api", "schema-registry")


def package_binaries():
    """{package name: [binary names]} from the workspace members' Cargo.toml."""
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    found = {}
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        found[manifest["package"]["name"]] = [b["name"] for b in manifest.get("bin", [])]
    return found


def instructions(text):
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def main():
    problems = Problems("dockerfile")
    where = rel(DOCKERFILE)
    steps = list(instructions(DOCKERFILE.read_text()))
    froms = [args for word, args in steps if word == "FROM"]
    problems.require(
        froms and re.match(r"rust:1\.95(\.\d+)?-bookworm\b", froms[0]),
        where,
        f"the builder is not a rust:1.95 bookworm image ({froms[:1]})",
    )
    problems.require(
        froms and froms[-1].startswith("debian:bookworm-slim"),
        where,
        "the runtime stage is not debian:bookworm-slim",
    )
    last_stage = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [args for word, args in last_stage if word == "USER"]
    problems.require(
        users and users[-1] == "10001", where, f"the runtime does not run as USER 10001 ({users})"
    )
    binaries = package_binaries()
    build = " ".join(args for word, args in steps if word == "RUN" and "cargo build" in args)
    problems.require(
        "--locked" in build and "--release" in build,
        where,
        "cargo build without --release --locked",
    )
    wanted = []
    for package in PACKAGES:
        problems.require(
            f"-p {package}" in build, where, f"cargo build does not build package {package}"
        )
        if problems.require(package in binaries, where, f"no workspace package {package}"):
            wanted += binaries[package]
    copies = " ".join(
        args for word, args in last_stage if word == "COPY" and args.startswith("--from=")
    )
    problems.require(
        copies.rstrip().endswith("/usr/local/bin/"),
        where,
        "the binaries are not copied to /usr/local/bin/",
    )
    for binary in wanted:
        problems.require(
            re.search(rf"/{re.escape(binary)}\b", copies),
            where,
            f"binary {binary} is not copied into the runtime image",
        )
    for word, args in steps:
        if word in ("CMD", "ENTRYPOINT"):
            problems.require(args.startswith("["), where, f"{word} {args} is not in exec form")
            problems.require(
                not re.search(r'"(/bin/)?(ba)?sh"', args), where, f"{word} runs a shell"
            )
    ignore = DEPLOY / "Dockerfile.dockerignore"
    patterns = (
        {
            line.strip().rstrip("/")
            for line in ignore.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        if ignore.exists()
        else set()
    )
    for path in ("target", ".data", ".git"):
        problems.require(
            path in patterns,
            rel(ignore) if ignore.exists() else where,
            f"{path}/ is not excluded from the build context",
        )
    problems.finish(f"{len(froms)} stages; {', '.join(wanted)} in /usr/local/bin; runs as 10001")


if __name__ == "__main__":
    main()
