"""The domain: the product's vocabulary (model.py), its rules (rules.py), the ways a request is
refused (errors.py) and the policy that sets the rules' numbers (policy.py). Pure: the standard
library only, no I/O but reading the policy file at start-up."""
