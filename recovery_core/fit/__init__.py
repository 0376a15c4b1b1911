"""Fitting the recovered model: what trains, the search for hidden values, training."""
