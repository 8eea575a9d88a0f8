#!/usr/bin/env python3
"""Runs every shell command in the fenced ```sh blocks of the given markdown files, in order, as
a new user would type them, from the current directory (a clone's root): the first-run check of
.ci/firstrun.sh, so the docs cannot drift from what works.

Each logical command (a line, with its `\\` continuations, open quotes and here-documents) runs in
its own `bash` with a timeout and must exit 0. A variable a command assigns (`cursor=$(…)`) is
kept for the commands after it in the same file, as in a terminal. Lines starting with `#` are
comments. A command ending in `&` runs in the background of its block (wait until it prints
something, run the rest, then it must have printed an event line on stdout).

A block is marked by HTML comments on the lines just before it, each
`<!-- firstrun: [line N[,M…]] MODE [(reason)] -->`, applying to the whole block or only to its
Nth logical commands (from 1):

  skip (reason)   not run; the reason is required (a placeholder, root, a broker, minutes long)
  background      a server: started and kept running for the blocks after it (a later
                  `background` one replaces it); ready once http://127.0.0.1:8080/healthz answers
  streams         may run forever (`curl -N`): still running after STREAM_SECONDS is a pass if it
                  printed something on stdout

Exit status: 0 when every command passed, 1 otherwise (each failure is printed with its output).
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
MARKER = re.compile(
    r"^\s*<!--\s*firstrun:\s*(?:line\s+(?P<lines>[\d,\s]+?)\s+)?(?P<mode>skip|background|streams)"
    r"\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$"
)
SHELLS = {"sh", "bash", "shell"}
STREAM_SECONDS = float(os.environ.get("FIRSTRUN_STREAM_SECONDS", "5"))
TIMEOUT = float(os.environ.get("FIRSTRUN_TIMEOUT", "60"))
CARGO_TIMEOUT = float(os.environ.get("FIRSTRUN_CARGO_TIMEOUT", "900"))
CARGO_WORDS = {"Compiling", "Finished", "Running", "Blocking", "Updating", "Downloading", "Downloaded", "Locking", "Adding", "warning:"}
HEALTHZ = os.environ.get("FIRSTRUN_HEALTHZ", "http://127.0.0.1:8080/healthz")


class Block:
    def __init__(self, path, line, lang, text, markers):
        self.path, self.line, self.lang, self.text, self.markers = path, line, lang, text, markers

    def where(self):
        return f"{self.path}:{self.line}"


def blocks(path):
    """Every fenced block of `path` with the firstrun markers just before it."""
    lines = open(path, encoding="utf-8").read().split("\n")
    found, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        opening = FENCE.match(line)
        if line.strip().startswith("<!--") and "firstrun" in line:
            marker = MARKER.match(line)
            if not marker:
                raise SystemExit(f"{path}:{i + 1}: a firstrun marker I cannot read: {line.strip()}")
            pending.append(marker)
        elif opening:
            indent, fence, lang = opening.groups()
            body, j = [], i + 1
            while j < len(lines) and not (
                lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
            ):
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            found.append(Block(path, i + 1, lang, "\n".join(body), pending))
            pending, i = [], j
        elif line.strip():
            if pending:
                raise SystemExit(f"{path}:{i + 1}: a firstrun marker must come just before a fenced block")
        i += 1
    return found


def commands(text):
    """Splits a block into logical commands: continuations, open quotes and here-documents
    join lines; blank lines and `#` comments between commands are dropped."""
    out, current, heredoc = [], [], None
    for line in text.split("\n"):
        if heredoc is not None:
            current.append(line)
            if line.strip() == heredoc:
                heredoc = None
                out.append("\n".join(current))
                current = []
            continue
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        joined = "\n".join(current)
        here = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if here:
            heredoc = here.group(1)
            continue
        if line.rstrip().endswith("\\") or not complete(joined):
            continue
        out.append(joined)
        current = []
    if current:
        out.append("\n".join(current))
    return out


def complete(text):
    """Whether bash can parse `text` as it is (no open quote, `$(`, `if` …)."""
    check = subprocess.run(["bash", "-n", "-c", text], capture_output=True)
    return check.returncode == 0


def modes_for(block, count):
    """The mode (None: run) and reason of each of the block's `count` commands."""
    modes = [(None, None)] * count
    for marker in block.markers:
        mode, reason = marker.group("mode"), (marker.group("reason") or "").strip()
        if mode == "skip" and not reason:
            raise SystemExit(f"{block.where()}: `firstrun: skip` needs a reason in parentheses")
        targets = range(1, count + 1)
        if marker.group("lines"):
            targets = [int(n) for n in re.split(r"[,\s]+", marker.group("lines").strip()) if n]
        for n in targets:
            if not 1 <= n <= count:
                raise SystemExit(f"{block.where()}: marker names line {n}; the block has {count} commands")
            modes[n - 1] = (mode, reason)
    return modes


def assigned_variable(command):
    match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=", command)
    return match.group(1) if match else None


def wrap(command, state):
    """The script that runs `command` with the variables kept so far, and keeps its own."""
    script = f"source {shlex.quote(state)}\n{command}\n"
    name = assigned_variable(command)
    if name:
        script += f"__rc=$?\ndeclare -p {name} >> {shlex.quote(state)} 2>/dev/null\nexit $__rc\n"
    return script


def start(script, log):
    return subprocess.Popen(
        ["bash", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not subprocess.PIPE else subprocess.PIPE,
        start_new_session=True,
    )


def stop(process, grace=5):
    """SIGINT (Ctrl-C) to the command's whole process group, then SIGKILL."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path_or_text, lines=25):
    text = path_or_text
    if os.path.exists(str(path_or_text)):
        text = open(path_or_text, encoding="utf-8", errors="replace").read()
    return "\n".join("    | " + line for line in text.rstrip().split("\n")[-lines:])


class Runner:
    def __init__(self, workdir):
        self.workdir = workdir
        self.state = os.path.join(workdir, "variables.sh")
        open(self.state, "w").close()
        self.server = None
        self.server_log = None
        self.failures, self.passed, self.skipped = [], 0, 0
        self.counter = 0
        self.children = []

    def log_path(self, suffix):
        self.counter += 1
        return os.path.join(self.workdir, f"{self.counter:03}-{suffix}.log")

    def fail(self, where, command, why, output):
        self.failures.append(where)
        print(f"FAIL {where}: {why}\n  $ {first_line(command)}\n{output}", flush=True)

    def run_file(self, path):
        open(self.state, "w").close()
        for block in blocks(path):
            if block.lang not in SHELLS:
                if block.markers:
                    raise SystemExit(f"{block.where()}: firstrun markers on a ```{block.lang} block")
                continue
            cmds = commands(block.text)
            jobs = []
            for n, (command, (mode, reason)) in enumerate(zip(cmds, modes_for(block, len(cmds))), 1):
                where = f"{block.where()} #{n}"
                if mode == "skip":
                    self.skipped += 1
                    print(f"skip {where}: {first_line(command)}  ({reason})", flush=True)
                elif mode == "background":
                    self.start_server(where, command)
                elif command.rstrip().endswith("&"):
                    jobs.append(self.start_job(where, command))
                else:
                    self.run(where, command, streams=mode == "streams")
            for job in jobs:
                self.finish_job(*job)

    def start_server(self, where, command):
        self.stop_server()
        log = self.log_path("server")
        self.server_log = log
        began = time.monotonic()
        self.server = start(wrap(command, self.state), open(log, "wb"))
        self.children.append(self.server)
        print(f"run  {where}: {first_line(command)}  (in the background)", flush=True)
        deadline = began + CARGO_TIMEOUT
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                self.fail(where, command, f"exited with status {self.server.returncode}", tail(log))
                self.server = None
                return
            try:
                with urllib.request.urlopen(HEALTHZ, timeout=2) as response:
                    if response.status == 200:
                        self.passed += 1
                        print(f"  ok, {HEALTHZ} answers 200 after {time.monotonic() - began:.1f} s", flush=True)
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.fail(where, command, f"{HEALTHZ} did not answer 200 within {CARGO_TIMEOUT:.0f} s", tail(log))

    def stop_all(self):
        """Every command still running, background server included (also on SIGTERM)."""
        self.stop_server()
        for process in self.children:
            stop(process, grace=2)

    def stop_server(self):
        if self.server is not None:
            stop(self.server, grace=15)
            if self.server.returncode not in (0, None):
                print(f"  note: the background server exited with {self.server.returncode}", flush=True)
            self.server = None

    def run(self, where, command, streams):
        timeout = CARGO_TIMEOUT if command.lstrip().startswith("cargo ") else TIMEOUT
        log = self.log_path("cmd")
        began = time.monotonic()
        process = start(wrap(command, self.state), open(log, "wb"))
        self.children.append(process)
        limit = STREAM_SECONDS if streams and not command.lstrip().startswith("cargo ") else timeout
        try:
            process.wait(limit)
        except subprocess.TimeoutExpired:
            stop(process)
            printed = os.path.getsize(log) > 0
            if streams and printed:
                self.passed += 1
                print(f"ok   {where}: {first_line(command)}  (streamed for {limit:.0f} s, stopped)", flush=True)
            else:
                why = "printed nothing" if streams else f"still running after {limit:.0f} s"
                self.fail(where, command, why, tail(log))
            return
        took = time.monotonic() - began
        if process.returncode == 0:
            self.passed += 1
            print(f"ok   {where}: {first_line(command)}  ({took:.1f} s)", flush=True)
        else:
            self.fail(where, command, f"exit status {process.returncode}", tail(log))

    def start_job(self, where, command):
        out, err = self.log_path("job-out"), self.log_path("job-err")
        script = wrap(command.rstrip().rstrip("&"), self.state)
        process = subprocess.Popen(
            ["bash", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=open(out, "wb"),
            stderr=open(err, "wb"),
            start_new_session=True,
        )
        self.children.append(process)
        print(f"run  {where}: {first_line(command)}", flush=True)
        timeout = CARGO_TIMEOUT if command.lstrip().startswith("cargo ") else TIMEOUT
        deadline = time.monotonic() + timeout
        # As a user would: wait until the program says something (it connected) before going
        # on; cargo's own lines (Compiling, Finished, Running) do not count.
        while time.monotonic() < deadline and process.poll() is None:
            said = [
                line
                for line in open(err, encoding="utf-8", errors="replace").read().split("\n")
                if line.strip() and line.split()[0] not in CARGO_WORDS
            ]
            if os.path.getsize(out) or said:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        return where, command, process, out, err

    def finish_job(self, where, command, process, out, err):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and process.poll() is None and not os.path.getsize(out):
            time.sleep(0.1)
        time.sleep(0.3)
        running = process.poll() is None
        stop(process)
        if os.path.getsize(out) and (running or process.returncode == 0):
            self.passed += 1
            print(f"ok   {where}: printed {first_line(open(out, encoding='utf-8', errors='replace').read())[:100]}", flush=True)
        else:
            status = "still running" if running else f"exit status {process.returncode}"
            self.fail(where, command, f"printed no event ({status})", tail(err))


def first_line(text):
    line = text.strip().split("\n")[0]
    return line if len(line) <= 110 else line[:107] + "…"


def main():
    # A SIGTERM (CI's timeout, `kill`) ends the run through the `finally` that stops every
    # command's process group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(sys.argv) < 2:
        raise SystemExit("usage: firstrun.py FILE.md ...")
    with tempfile.TemporaryDirectory(prefix="streamgate-firstrun-") as workdir:
        runner = Runner(workdir)
        try:
            for path in sys.argv[1:]:
                print(f"\n--- {path}", flush=True)
                runner.run_file(path)
        finally:
            runner.stop_all()
        print(
            f"\nfirstrun: {runner.passed} passed, {len(runner.failures)} failed, "
            f"{runner.skipped} skipped (each with its reason above)",
            flush=True,
        )
        if runner.failures:
            if runner.server_log and os.path.exists(runner.server_log):
                print(f"the background server's log:\n{tail(runner.server_log, 40)}")
            print("failed: " + ", ".join(runner.failures))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
