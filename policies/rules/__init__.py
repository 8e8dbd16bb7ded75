"""Team rules in CEL (`spec.rules` of a PolicySet): compiled when the PolicySet loads, evaluated by the same
engine as the built-in policies, exported to ValidatingAdmissionPolicy where the API server can run them."""
