"""Errors a user can cause, and the exit codes the command line maps them to."""

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_VERIFY_FAILED = 4


class UserError(Exception):
    """Bad input: reported as one sentence, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class VerificationError(Exception):
    """The exported checkpoint does not reproduce the masked original: exit code 4."""

    exit_code = EXIT_VERIFY_FAILED


class GateFailed(Exception):
    """The pruned model lost more than the evaluation gate allows (--max-drop / --min-retention): exit code 3."""

    exit_code = EXIT_GATE_FAILED
