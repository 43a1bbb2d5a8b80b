"""`python -m stack`: the embedded development stack (what `make run` starts)."""

from stack.main import main

main()
