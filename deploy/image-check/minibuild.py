#!/usr/bin/env python3
"""A tiny Dockerfile interpreter over chroots: builds and runs knd's image without Docker.

Used by check.sh (read its header first). Stdlib only; runs as root on the host.

  minibuild.py --work DIR base [--mirror URL] [--fresh]
      debootstrap --variant=minbase bookworm, made to look like python:3.11-slim-bookworm
      (Debian's python3 instead of the image's own /usr/local python).
  minibuild.py --work DIR build --context REPO [--dockerfile F] [--build-arg K=V]...
      the Dockerfile's instructions, stage by stage, each stage in a fresh copy of the
      base (FROM), the context filtered by .dockerignore; writes DIR/image.json
      (the final stage: rootfs, Env, User, WorkingDir, Entrypoint, Cmd) and
      DIR/build-steps.tsv (one line per instruction: stage, n, status, seconds, text).
  minibuild.py --work DIR context --context REPO
      only print the files .dockerignore lets through.
  minibuild.py --work DIR run [--user U] [--netns NS] [-e K=V]... [--entrypoint E] [-- ARGS]
      what `docker run IMAGE ARGS` does, roughly: the final stage's rootfs as /, its
      Env, User, WorkingDir, Entrypoint + (ARGS or Cmd); pid 1 of a fresh pid namespace.

Every command runs in a private mount namespace and a fresh pid namespace (unshare
--mount --pid --fork --kill-child): /proc, /sys (read-only sysfs of the current netns),
/dev (bind), /etc/resolv.conf and /etc/hosts are mounted there, so they disappear with
the process, even when it is killed; nothing is mounted on the host.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = "bookworm"
BASE_IMAGES = {"python:3.11-slim-bookworm": "base"}
"""Image references FROM may name, and the rootfs under --work that stands in for it."""
BASE_ENV = {
    # python:3.11-slim-bookworm's Env (less GPG_KEY, PYTHON_VERSION, PYTHON_SHA256)
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
BASE_PACKAGES = ["ca-certificates", "netbase", "tzdata", "python3", "python3-venv",
                 "python-is-python3"]
"""ca-certificates, netbase, tzdata: what python:3.11-slim installs beside its python;
python3 + python3-venv (+ python-is-python3, so that `python` exists as in the image):
Debian's 3.11 in place of the image's /usr/local/bin/python3.11."""

DEBIAN_SOURCES = f"""\
Types: deb
URIs: http://deb.debian.org/debian
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# debian:bookworm-slim's dpkg configuration (debuerreotype --slimify), approximately
DPKG_SLIM = """\
# This is the "slim" variant of the Debian base image.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
"""
# debian:bookworm's apt configuration (debuerreotype): no .deb, no pkgcache left behind
APT_CONF = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'),
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
}
SLIM_PRUNE = ["usr/share/doc", "usr/share/info", "usr/share/linda", "usr/share/lintian/overrides",
              "usr/share/locale", "usr/share/man", "usr/share/groff"]
BASE_VERSION = "2"
"""Bumped when make_base changes: a base of another version is made again."""
HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
"""


def log(msg: str) -> None:
    print(f"[minibuild] {msg}", flush=True)


class BuildError(Exception):
    pass


# ---- running a command inside a rootfs ---------------------------------------------------

def lookup_user(root: Path, user: str) -> tuple[int, int, list[int], str]:
    """uid, gid, supplementary groups and HOME of ``user`` ("name", "uid", "uid:gid",
    "name:group") in the rootfs, as Docker resolves USER."""
    name, _, group = user.partition(":")
    passwd = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
              if line and not line.startswith("#")]
    groups = [line.split(":") for line in (root / "etc/group").read_text().splitlines()
              if line and not line.startswith("#")]
    entry = next((p for p in passwd if p[0] == name or (name.isdigit() and p[2] == name)), None)
    if entry is None and not name.isdigit():
        raise BuildError(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else int(name)
    home = entry[5] if entry else "/"
    if group:
        g = next((g for g in groups if g[0] == group or (group.isdigit() and g[2] == group)),
                 None)
        if g is None and not group.isdigit():
            raise BuildError(f"unable to find group {group}")
        gid = int(g[2]) if g else int(group)
        extra: list[int] = []
    else:
        gid = int(entry[3]) if entry else 0
        extra = [int(g[2]) for g in groups if entry and entry[0] in g[3].split(",")]
    return uid, gid, sorted({gid, *extra}), home


def exec_spec(root: Path, argv: list[str], env: dict[str, str], user: str, workdir: str,
              work: Path, binds: list[tuple[str, str]] = ()) -> dict:
    uid, gid, groups, home = lookup_user(root, user)
    env = dict(env)
    env.setdefault("HOME", home)
    env.setdefault("HOSTNAME", os.uname().nodename)
    return {"root": str(root), "argv": argv, "env": env, "uid": uid, "gid": gid,
            "groups": groups, "workdir": workdir or "/", "hosts": str(work / "hosts"),
            "binds": [list(b) for b in binds]}


def outer_command(spec_path: Path, netns: str | None) -> list[str]:
    cmd = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
           sys.executable, os.path.abspath(__file__), "_exec", str(spec_path)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return cmd


def write_spec(work: Path, spec: dict) -> Path:
    (work / "hosts").write_text(HOSTS)
    specs = work / "specs"
    specs.mkdir(exist_ok=True)
    path = specs / f"{time.time_ns()}.json"
    path.write_text(json.dumps(spec))
    return path


def run_in_root(work: Path, root: Path, argv: list[str], env: dict[str, str], user: str = "0",
                workdir: str = "/", timeout: float | None = None,
                binds: list[tuple[str, str]] = ()) -> int:
    spec = write_spec(work, exec_spec(root, argv, env, user, workdir, work, binds))
    return subprocess.run(outer_command(spec, None), timeout=timeout).returncode


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def inner_exec(spec_path: str) -> None:
    """pid 1 of the fresh pid namespace, in the private mount namespace: mount, chroot, exec."""
    spec = json.loads(Path(spec_path).read_text())
    Path(spec_path).unlink(missing_ok=True)
    root = Path(spec["root"])
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    _mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(root / "sys"))
    _mount("--rbind", "/dev", str(root / "dev"))
    for name, source in (("resolv.conf", os.path.realpath("/etc/resolv.conf")),
                         ("hosts", spec["hosts"])):
        target = root / "etc" / name
        if target.is_symlink() or not target.exists():
            target.unlink(missing_ok=True)
            target.touch()
        _mount("--bind", source, str(target))
    for source, target in spec.get("binds", []):
        dest = root / target.lstrip("/")
        if dest.exists():  # a file the rootfs already has: nothing is left behind
            _mount("--bind", "-o", "ro", source, str(dest))
    os.chroot(root)
    os.chdir(spec["workdir"])
    if spec.get("init"):
        child = os.fork()
        if child:
            init_loop(child)  # never returns
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as e:
        print(f"exec {argv[0]}: {e}", file=sys.stderr)
        os._exit(127)


def init_loop(child: int) -> None:
    """pid 1 as `docker run --init` (tini) is: forward signals to the command, reap
    every orphan, exit with the command's status."""
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))


# ---- the base: python:3.11-slim-bookworm, approximately ------------------------------------

def make_base(work: Path, mirror: str, fresh: bool) -> None:
    boot, base = work / "debootstrap", work / "base"
    if fresh:
        for d in (boot, base):
            shutil.rmtree(d, ignore_errors=True)
    stamp = base / ".knd-base-ok"
    if stamp.exists() and stamp.read_text().strip() == BASE_VERSION:
        log(f"base: reusing {base}")
        return
    if (boot / ".knd-debootstrap-ok").exists():
        log(f"debootstrap: reusing {boot}")
    else:
        tmp = work / "debootstrap.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"debootstrap --variant=minbase {SUITE} {tmp} {mirror}")
        subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(tmp), mirror], check=True)
        (tmp / ".knd-debootstrap-ok").touch()
        shutil.rmtree(boot, ignore_errors=True)
        tmp.rename(boot)
    tmp = work / "base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(boot), str(tmp)], check=True)
    (tmp / ".knd-debootstrap-ok").unlink()
    # debian:bookworm's apt sources and slim dpkg excludes; no services start in a chroot
    (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
    (tmp / "etc/apt/sources.list.d/debian.sources").write_text(DEBIAN_SOURCES)
    (tmp / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_SLIM)
    for name, text in APT_CONF.items():
        (tmp / "etc/apt/apt.conf.d" / name).write_text(text)
    # what the slim excludes keep out, out of the packages debootstrap installed too
    for rel in SLIM_PRUNE:
        top = tmp / rel
        for path in sorted(top.rglob("*"), reverse=True) if top.is_dir() else []:
            keep = (path.name == "copyright" and rel == "usr/share/doc") or (
                path.name == "locale.alias" and rel == "usr/share/locale")
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif not keep:
                path.unlink()
    policy = tmp / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {**BASE_ENV, "DEBIAN_FRONTEND": "noninteractive"}
    script = ("apt-get update && apt-get install -y --no-install-recommends "
              + " ".join(BASE_PACKAGES)
              + " && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
              + " && python --version && python -m venv --help >/dev/null")
    log(f"base: {script}")
    if run_in_root(work, tmp, ["/bin/sh", "-c", script], env) != 0:
        raise BuildError("base: installing python3 failed")
    (tmp / ".knd-base-ok").write_text(BASE_VERSION + "\n")
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    log(f"base: ready at {base}")


# ---- .dockerignore ------------------------------------------------------------------------

class Pattern:
    """One .dockerignore line, as moby/patternmatcher compiles and matches it."""

    def __init__(self, text: str) -> None:
        self.exclusion = text.startswith("!")
        if self.exclusion:
            text = text[1:].strip()
        text = os.path.normpath(text) if text else text  # filepath.Clean
        if text.startswith("/") and len(text) > 1:
            text = text[1:]
        self.text = text
        self.regex = re.compile(self._regex(text))

    @staticmethod
    def _regex(p: str) -> str:
        out, i = "^", 0
        while i < len(p):
            c = p[i]
            if c == "*":
                if i + 1 < len(p) and p[i + 1] == "*":
                    i += 2
                    if i < len(p) and p[i] == "/":
                        i += 1
                    out += ".*" if i >= len(p) else "(.*/)?"
                    continue
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif c == "\\" and i + 1 < len(p):
                i += 1
                out += re.escape(p[i])
            elif c == "[":
                j = p.find("]", i + 1)
                if j < 0:
                    raise BuildError(f".dockerignore: bad pattern {p!r}")
                out += "[" + p[i + 1:j].replace("!", "^", 1) + "]"
                i = j
            else:
                out += re.escape(c)
            i += 1
        return out + "$"

    def match(self, path: str) -> bool:
        return self.regex.match(path) is not None


def read_dockerignore(path: Path) -> list[Pattern]:
    if not path.exists():
        return []
    pats = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Pattern(line)
        if p.text in ("", "."):
            continue
        pats.append(p)
    return pats


def excluded(path: str, patterns: list[Pattern]) -> bool:
    """patternmatcher.MatchesOrParentMatches: the last pattern that matches the path or
    one of its parent folders decides."""
    matched = False
    parent = os.path.dirname(path)
    parents = parent.split("/") if parent else []
    for p in patterns:
        if p.exclusion != matched:
            continue
        hit = p.match(path)
        if not hit and parents:
            hit = any(p.match("/".join(parents[:i + 1])) for i in range(len(parents)))
        if hit:
            matched = not p.exclusion
    return matched


def context_files(repo: Path) -> list[str]:
    patterns = read_dockerignore(repo / ".dockerignore")
    kept = []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, repo)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(
                os.path.join(dirpath, d))]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not excluded(rel, patterns):
                kept.append(rel)
    return kept


def make_context(repo: Path, dest: Path) -> list[str]:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    files = context_files(repo)
    for rel in files:
        src, dst = repo / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    # the build context arrives owned by root (COPY without --chown: 0:0)
    subprocess.run(["chown", "-R", "-h", "0:0", str(dest)], check=True)
    return files


# ---- the Dockerfile -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments): continuation lines joined, comments dropped."""
    out: list[tuple[int, str, str]] = []
    cur: str | None = None
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if cur is None:
            if not s or s.startswith("#"):
                if s.startswith("#") and re.match(r"#\s*escape\s*=", s) and n == 1:
                    raise BuildError("escape directive not supported")
                continue
            cur, start = "", n
        elif not s or s.startswith("#"):
            continue
        m = re.search(r"\\[ \t]*$", raw)
        if m:
            cur += raw[:m.start()]
            continue
        cur += raw
        word, _, rest = cur.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        cur = None
    if cur is not None:
        word, _, rest = cur.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


VAR = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}"
                 r"|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(s: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "\\$":
            return "$"
        name = m.group(1) or m.group(4)
        value = env.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value
    return VAR.sub(sub, s)


def json_or_shell(args: str) -> list[str]:
    if args.startswith("["):
        try:
            v = json.loads(args)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return v
        except json.JSONDecodeError:
            pass
    return ["/bin/sh", "-c", args]


class Stage:
    def __init__(self, index: int, name: str | None, root: Path, env: dict[str, str],
                 config: dict) -> None:
        self.index, self.name, self.root = index, name, root
        self.env = dict(env)
        self.user = config.get("user", "0")
        self.workdir = config.get("workdir", "/")
        self.entrypoint = config.get("entrypoint")
        self.cmd = config.get("cmd")

    def config(self) -> dict:
        return {"user": self.user, "workdir": self.workdir, "entrypoint": self.entrypoint,
                "cmd": self.cmd}

    def label(self) -> str:
        return self.name or f"stage{self.index}"


def copy_into(src: Path, dest: Path, dest_is_dir: bool) -> None:
    if src.is_dir() and not src.is_symlink():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", f"{src}/.", str(dest)], check=True)
    else:
        if dest_is_dir or dest.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest = dest / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(src), str(dest)], check=True)


def do_copy(stage: Stage, args: str, context: Path, stages: list[Stage]) -> None:
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    if set(flags) - {"from", "chown", "link"}:
        raise BuildError(f"COPY flags not supported: {flags}")
    if words and words[0].startswith("["):
        words = json.loads(" ".join(words))
    words = [expand(w, stage.env) for w in words]
    *srcs, dest = words
    if not srcs:
        raise BuildError("COPY needs a source and a destination")
    if "from" in flags:
        name = flags["from"]
        src_stage = next((s for s in stages if s.name == name or str(s.index) == name), None)
        if src_stage is None:
            raise BuildError(f"COPY --from={name}: no such stage (external images unsupported)")
        src_root = src_stage.root
    else:
        src_root = context
    dest_path = dest if dest.startswith("/") else os.path.join(stage.workdir, dest)
    dest_is_dir = dest.endswith("/") or len(srcs) > 1 or dest in (".", "./")
    target = stage.root / dest_path.lstrip("/")
    for src in srcs:
        matches = sorted(glob.glob(str(src_root / src.lstrip("/"))))
        if not matches:
            where = "build context" if src_root == context else f"stage {name}"
            raise BuildError(f"COPY: {src} not found in the {where} "
                             "(excluded by .dockerignore?)")
        for m in matches:
            copy_into(Path(m), target, dest_is_dir or len(matches) > 1)
    if "chown" in flags:
        uid, gid, _, _ = lookup_user(stage.root, flags["chown"])
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(target)], check=True)


def parse_env(args: str, env: dict[str, str]) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: expand(" ".join(words[1:]), env)}
    out = {}
    for w in words:
        key, _, value = w.partition("=")
        out[key] = expand(value, {**env, **out})
    return out


BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def build(work: Path, repo: Path, dockerfile: Path, build_args: dict[str, str],
          build_ca: Path | None = None) -> dict:
    """``build_ca``: a CA bundle for networks that intercept TLS (a proxy's own CA).
    RUN steps then see it over the rootfs's own bundle (a bind mount: not in the image)
    and get PIP_CERT/REQUESTS_CA_BUNDLE/SSL_CERT_FILE pointing at it, as `docker build
    --secret` or a proxy-aware builder would give them; nothing of it is in the image."""
    run_binds: list[tuple[str, str]] = []
    run_env: dict[str, str] = {}
    if build_ca is not None:
        run_binds = [(str(build_ca), BUNDLE)]
        run_env = {"PIP_CERT": BUNDLE, "REQUESTS_CA_BUNDLE": BUNDLE, "SSL_CERT_FILE": BUNDLE}
        log(f"build-time CA bundle {build_ca} over {BUNDLE}, and {sorted(run_env)} for RUN")
    steps_file = work / "build-steps.tsv"
    steps_file.write_text("")
    context = work / "context"
    files = make_context(repo, context)
    log(f"context: {len(files)} files pass .dockerignore (listed in {work}/context-files.txt)")
    (work / "context-files.txt").write_text("".join(f + "\n" for f in files))

    meta: dict[str, str] = {}
    stages: list[Stage] = []
    stage: Stage | None = None
    stages_dir = work / "stages"
    shutil.rmtree(stages_dir, ignore_errors=True)
    stages_dir.mkdir()
    todo = instructions(dockerfile.read_text())
    for n, (line, instr, args) in enumerate(todo, 1):
        label = f"{instr} {args}"
        short = re.sub(r"\s+", " ", label)[:110]
        where = stage.label() if stage else "-"
        log(f"[{where}] step {n}/{len(todo)} (line {line}): {short}")
        t0 = time.monotonic()
        status = "ok"
        try:
            if instr == "ARG":
                key, eq, value = args.partition("=")
                env_now = meta if stage is None else stage.env
                if key in build_args:
                    value = build_args[key]
                elif not eq:
                    value = env_now.get(key, "")
                if stage is None:
                    meta[key] = value
                else:
                    stage.env.setdefault(key, value)  # ARG values are visible to RUN
            elif instr == "FROM":
                words = args.split()
                words = [w for w in words if not w.startswith("--platform")]
                image = expand(words[0], meta)
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
                root = stages_dir / f"{len(stages)}-{name or 'final'}"
                parent = next((s for s in stages if s.name == image), None)
                if parent is not None:
                    subprocess.run(["cp", "-a", str(parent.root), str(root)], check=True)
                    env, config = parent.env, parent.config()
                elif image in BASE_IMAGES:
                    base = work / BASE_IMAGES[image]
                    subprocess.run(["cp", "-a", str(base), str(root)], check=True)
                    (root / ".knd-base-ok").unlink(missing_ok=True)
                    env, config = BASE_ENV, {"cmd": ["python3"]}
                else:
                    raise BuildError(f"FROM {image}: only {sorted(BASE_IMAGES)} are emulated")
                stage = Stage(len(stages), name, root, env, config)
                stages.append(stage)
                short = f"FROM {image}{' AS ' + name if name else ''} -> {root}"
            elif stage is None:
                raise BuildError(f"{instr} before FROM")
            elif instr == "ENV":
                stage.env.update(parse_env(args, stage.env))
            elif instr == "WORKDIR":
                wd = expand(args, stage.env)
                stage.workdir = wd if wd.startswith("/") else os.path.join(stage.workdir, wd)
                (stage.root / stage.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif instr == "COPY":
                do_copy(stage, args, context, stages)
            elif instr == "RUN":
                argv = json_or_shell(args)
                rc = run_in_root(work, stage.root, argv, {**stage.env, **run_env}, stage.user,
                                 stage.workdir, binds=run_binds)
                if rc != 0:
                    raise BuildError(f"RUN exited with {rc}: {short}")
            elif instr == "USER":
                stage.user = expand(args, stage.env)
                lookup_user(stage.root, stage.user)
            elif instr == "ENTRYPOINT":
                stage.entrypoint = json_or_shell(args)
                stage.cmd = None  # Docker: ENTRYPOINT resets the inherited CMD
            elif instr == "CMD":
                stage.cmd = json_or_shell(args)
            elif instr in ("LABEL", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "VOLUME"):
                if instr in ("SHELL", "VOLUME"):
                    raise BuildError(f"{instr} not supported by minibuild")
            else:
                raise BuildError(f"unknown instruction {instr}")
        except (BuildError, subprocess.CalledProcessError, OSError) as e:
            status = "FAIL"
            log(f"FAILED: {e}")
            raise
        finally:
            dt = time.monotonic() - t0
            with steps_file.open("a") as f:
                f.write(f"{where if instr != 'FROM' else (stage.label() if stage else '-')}"
                        f"\t{n}\t{status}\t{dt:.1f}\t{short}\n")
            log(f"  -> {status} ({dt:.1f}s)")
    assert stage is not None
    image = {"rootfs": str(stage.root), "env": stage.env, **stage.config(),
             "stages": {s.label(): str(s.root) for s in stages}}
    (work / "image.json").write_text(json.dumps(image, indent=2))
    log(f"image: {work}/image.json (rootfs {stage.root})")
    return image


# ---- docker run, roughly -------------------------------------------------------------------

def run_image(work: Path, user: str | None, netns: str | None, env_overrides: list[str],
              entrypoint: str | None, workdir: str | None, args: list[str],
              init: bool = False) -> None:
    image = json.loads((work / "image.json").read_text())
    root = Path(image["rootfs"])
    env = dict(image["env"])
    for kv in env_overrides:
        key, _, value = kv.partition("=")
        env[key] = value
    ep = [entrypoint] if entrypoint is not None else (image["entrypoint"] or [])
    cmd = args if args else ([] if entrypoint is not None else (image["cmd"] or []))
    argv = ep + cmd
    if not argv:
        raise BuildError("no command")
    spec = write_spec(work, exec_spec(root, argv, env, user or image["user"] or "0",
                                      workdir or image["workdir"] or "/", work))
    if init:
        spec_data = json.loads(spec.read_text())
        spec_data["init"] = True
        spec.write_text(json.dumps(spec_data))
    os.execvp(outer_command(spec, netns)[0], outer_command(spec, netns))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_exec":
        inner_exec(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base")
    b.add_argument("--mirror", default="http://deb.debian.org/debian")
    b.add_argument("--fresh", action="store_true")
    bd = sub.add_parser("build")
    bd.add_argument("--context", type=Path, required=True)
    bd.add_argument("--dockerfile", type=Path)
    bd.add_argument("--build-arg", action="append", default=[])
    bd.add_argument("--build-ca", type=Path,
                    help="CA bundle for RUN steps on a network that intercepts TLS")
    c = sub.add_parser("context")
    c.add_argument("--context", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--user", "-u")
    r.add_argument("--netns")
    r.add_argument("-e", "--env", action="append", default=[])
    r.add_argument("--entrypoint")
    r.add_argument("--workdir", "-w")
    r.add_argument("--init", action="store_true",
                   help="an init as pid 1 that forwards signals (docker run --init)")
    r.add_argument("args", nargs="*")
    a = p.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        if a.cmd == "base":
            make_base(work, a.mirror, a.fresh)
        elif a.cmd == "build":
            bargs = dict(kv.partition("=")[::2] for kv in a.build_arg)
            build(work, a.context.resolve(), (a.dockerfile or a.context / "Dockerfile").resolve(),
                  bargs, a.build_ca)
        elif a.cmd == "context":
            print("\n".join(context_files(a.context.resolve())))
        elif a.cmd == "run":
            run_image(work, a.user, a.netns, a.env, a.entrypoint, a.workdir, a.args, a.init)
    except BuildError as e:
        print(f"minibuild: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
