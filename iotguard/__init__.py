"""The system as a whole: what needs both the agent and the controller (the demo)."""
