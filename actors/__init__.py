"""Ray actors that host the engines: generator (vLLM) and verifier (PRM) replicas."""
