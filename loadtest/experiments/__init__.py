"""Experiments: gateway variants measured with the benchmark before anyone changes gateway/.

Each module here runs ``gateway`` with one idea patched in at run time, so the idea's effect is
measured by the same benchmark as the shipped code (``--gateway-command``), and RESULTS.md can
say what the next change buys before it is made. Nothing here is imported by the gateway.
"""
