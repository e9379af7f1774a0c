"""The wire contract shared by agent and controller: canonical JSON, signing, rule sets, messages."""
