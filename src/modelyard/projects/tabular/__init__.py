"""Schema-driven tabular regression (apartment prices and other tables): config is the project."""
