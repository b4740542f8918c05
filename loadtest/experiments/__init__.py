"""Experiments: gateway variants measured by the same benchmark as the shipped code.

Each module runs ``gateway`` with one idea patched in at run time (``--gateway-command``): either
a next idea, measured before anyone changes gateway/, or a shipped change undone, so RESULTS.md
can say what that change wins in the same run. Nothing here is imported by the gateway.
"""
