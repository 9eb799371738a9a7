# expect: timeout
import signal


def transform(grid):
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.alarm(0)
    total = 0
    while True:
        total += 1
