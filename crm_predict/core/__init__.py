"""The bottom layer: settings, business rules, model specs and small helpers every package uses."""
