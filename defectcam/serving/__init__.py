"""Serving: the one service every face calls, the deadline planner and the interaction log."""
