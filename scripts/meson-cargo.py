#!/usr/bin/env python3
"""What meson.build runs: cargo builds, the version check, gst-inspect of the built plugin."""
import argparse
import os
import shutil
import subprocess
import sys
import tomllib


def cargo(args, manifest, target_dir, profile):
    cmd = ["cargo", *args, "--locked", "--manifest-path", manifest, "--target-dir", target_dir]
    if profile == "release":
        cmd.append("--release")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build(a):
    cargo(["build", "-p", "gst-plugin-wilddog", "-p", "wilddog-runner"], a.manifest, a.target_dir, a.profile)
    for name in ("libgstwilddog.so", "wilddog-runner"):
        shutil.copy2(os.path.join(a.target_dir, a.profile, name), os.path.join(a.out_dir, name))


def test(a):
    # cargo nextest runs the tests of every binary side by side, each in a process of its own
    # (.config/nextest.toml says how many at once and which run alone): about 4 minutes
    # instead of 8 for `cargo test`, which runs the binaries one after another. It does not
    # run doc tests: cargo test does those.
    if shutil.which("cargo-nextest"):
        failed = []
        for args in (["nextest", "run", "--workspace", "--no-fail-fast"], ["test", "--workspace", "--doc"]):
            try:
                cargo(args, a.manifest, a.target_dir, a.profile)
            except subprocess.CalledProcessError:
                failed.append(" ".join(args[:2]))
        if failed:
            sys.exit(f"failed: {', '.join(failed)} (above)")
    else:
        print("cargo-nextest is not installed: cargo test runs the test binaries one after another"
              " (about 4 minutes longer)", flush=True)
        cargo(["test", "--workspace", "--no-fail-fast"], a.manifest, a.target_dir, a.profile)


def check_version(a):
    with open(a.manifest, "rb") as f:
        cargo_version = tomllib.load(f)["workspace"]["package"]["version"]
    if cargo_version != a.version:
        sys.exit(f"meson.build says version {a.version}, Cargo.toml says {cargo_version}")
    print(f"version {a.version} matches Cargo.toml")


def inspect(a):
    env = dict(os.environ, GST_PLUGIN_PATH=a.plugin_dir, GST_REGISTRY=os.path.join(a.plugin_dir, "registry.bin"))
    out = subprocess.run(["gst-inspect-1.0", "wilddog"], env=env, capture_output=True, text=True)
    print(out.stdout, out.stderr)
    missing = [e for e in ("wilddogcall", "wilddogsink", "wilddogsrc") if e not in out.stdout]
    if out.returncode != 0 or missing:
        sys.exit(f"gst-inspect-1.0 wilddog: exit {out.returncode}, missing elements {missing}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--manifest", required=True)
    b.add_argument("--target-dir", required=True)
    b.add_argument("--profile", required=True)
    b.add_argument("--out-dir", required=True)
    t = sub.add_parser("test")
    t.add_argument("--manifest", required=True)
    t.add_argument("--target-dir", required=True)
    t.add_argument("--profile", required=True)
    v = sub.add_parser("check-version")
    v.add_argument("--manifest", required=True)
    v.add_argument("--version", required=True)
    i = sub.add_parser("inspect")
    i.add_argument("--plugin-dir", required=True)
    a = p.parse_args()
    {"build": build, "test": test, "check-version": check_version, "inspect": inspect}[a.cmd](a)


if __name__ == "__main__":
    main()
