"""`python -m ddpm` (and torchrun's `-m ddpm`). Guarded so that a process the spawn start method starts, which
imports the parent's main module, never runs the command again (Windows has no fork)."""

from ddpm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
