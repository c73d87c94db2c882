"""Flow-matching noise schedules and solvers."""
