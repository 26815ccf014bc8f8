"""Running the `vae` command in tests, each time in a process of its own.

The installed console script (``console=True``) starts a new interpreter that imports torch, Lightning and W&B:
about 12 s on these 2 cores before the command does anything. Tests that run the command dozens of times (the
bad-input table, the fault tests) run the same ``vae.commands.fit.main`` on the same arguments, working folder and
environment in a process forked from a server that has imported the package once (a fork server: a clean
interpreter that ran no torch code, so forking it is safe), and end it as the interpreter would (its atexit
functions run: W&B finishes its run there).
"""

import atexit
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from multiprocessing import connection, forkserver
from pathlib import Path

_context = multiprocessing.get_context("forkserver")
# Process.start() polls every running child, reading the exit status of those that ended from their status pipe.
# A thread doing that while another thread waits for the same child makes one of them read the pipe empty, and
# multiprocessing then reports exit status 255 (seen in 3 of 150 commands started three at a time). Tests start
# and wait for commands from several threads, so both happen under this lock.
_POLLING = threading.Lock()
_context.set_forkserver_preload(["vae.commands.fit", "vae.commands", "command", "warm_cli"])
HERE = Path(__file__).resolve().parent


def _ensure_server() -> None:
    """Start the fork server (once) with this folder importable. Python 3.11's fork server does not take the
    parent's sys.path before it imports its preloads, and skips a preload it cannot import without a word: without
    this, `command` and `warm_cli` were never preloaded, and every command built its parser afresh (1.5 s instead
    of 0.5 s on these 2 cores)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(path for path in (str(HERE), saved) if path)
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved


def vae_command() -> list[str]:
    """The installed `vae` console command beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("vae")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vae"]


def run_vae(
    args: list[str],
    cwd: Path,
    env: dict,
    timeout: int = 300,
    *,
    console: bool = False,
    file_size_limit: int | None = None,
) -> subprocess.CompletedProcess:
    """`vae <args>` in its own process: its exit status (negative: the signal that ended it), stdout, stderr."""
    if console:
        return subprocess.run(
            [*vae_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    process = start_vae(args, cwd, env, file_size_limit=file_size_limit)
    return process.wait(timeout)


class Started:
    """A `vae` command running in a forked process."""

    def __init__(self, process, out: Path, err: Path, args: list[str]) -> None:
        self.process, self.out, self.err, self.args = process, out, err, args

    @property
    def pid(self) -> int:
        return self.process.pid

    def send_signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        ended = connection.wait([self.process.sentinel], timeout)
        with _POLLING:  # reading the exit status, one thread at a time (see _POLLING)
            if not ended:
                self.process.kill()
                self.process.join()
                raise subprocess.TimeoutExpired(["vae", *self.args], timeout)
            self.process.join()
        result = subprocess.CompletedProcess(
            ["vae", *self.args], self.process.exitcode, self.out.read_text(), self.err.read_text()
        )
        self.out.unlink(missing_ok=True)
        self.err.unlink(missing_ok=True)
        return result


def start_vae(args: list[str], cwd: Path, env: dict, *, file_size_limit: int | None = None) -> Started:
    """Start `vae <args>` in a forked process and return at once."""
    out = Path(tempfile.mkstemp(prefix="vae-out-")[1])
    err = Path(tempfile.mkstemp(prefix="vae-err-")[1])
    _ensure_server()
    process = _context.Process(
        target=_main, args=(list(args), str(cwd), dict(env), str(out), str(err), file_size_limit)
    )
    with _POLLING:
        process.start()
    return Started(process, out, err, list(args))


def _main(args, cwd, env, out, err, file_size_limit) -> None:
    """The child: the command's working folder, environment and output files, then `vae.commands.fit.main(args)`. The
    exit
    functions the server registered when it imported the package (W&B's media folder, shared by every child, among
    them) are the server's: the command runs only those it registers itself."""
    atexit._clear()
    # The signals as a fresh interpreter has them: the fork server ignores SIGINT, and leaves the handlers it had
    # when it imported its preloads; the command decides (it skips a signal its parent set to be ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for path in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
        if path:
            sys.path.insert(0, path)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    if file_size_limit is not None:  # writes past the limit fail with EFBIG (as on a full disk), not SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    from vae.commands import main

    sys.argv = ["vae", *args]  # as the console script leaves them: main() reads the command line
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # as the interpreter does when the command ends
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
