"""python -m lmsample demo|verify|bench|sample ...: runs the lmsample tool built into this
package (the same program as the C++ build's `lmsample`)."""

import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    tool = os.path.join(here, "bin", "lmsample")
    if not os.access(tool, os.X_OK):
        sys.stderr.write(
            "lmsample: the command-line tool is not part of this installation (it is built when "
            "CLI11 and nlohmann-json are found at build time; `bash scripts/setup.sh` installs "
            f"them); looked for {tool}\n"
        )
        return 2
    args = sys.argv[1:]
    if not args:
        args = ["--help"]
    sys.stdout.flush()
    os.execv(tool, [tool] + args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
