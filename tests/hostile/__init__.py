"""Outside probes: attacks a hostile or racing client would try, each asserting the SPEC's answer
and that a calm bystander keeps being served (issue 13, SPEC \"Hardening\")."""
