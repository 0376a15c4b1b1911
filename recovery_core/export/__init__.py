"""Export the trained model and prove each file by reloading it."""
