"""``python -m flexigan.boards.pyosys_cli [-q] [-l LOG] SCRIPT``: the part of Yosys's command
line that the platforms' build scripts use, run by the native ``pyosys`` wheel (which ships no
executable). Exit status 1 with Yosys's error on stderr when a command fails."""

import argparse
import sys

__all__ = ["main"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pyosys_cli")
    parser.add_argument("-q", action="store_true", help="no log on the terminal")
    parser.add_argument("-l", dest="log", help="write the log to this file")
    parser.add_argument("script", help="a Yosys script (.ys)")
    args = parser.parse_args(argv)
    from pyosys import libyosys as ys

    design = ys.Design()
    tee = "tee" + (" -q" if args.q else "") + (f" -o {args.log}" if args.log else "")
    try:
        ys.run_pass(f"{tee} script {args.script}", design)
    except Exception as exc:            # pyosys raises the log_error as a plain exception
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
