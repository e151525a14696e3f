"""tde-det's tests; shared helpers are in :mod:`tests.helpers`."""
