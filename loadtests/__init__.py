"""Locust load tests for Spidi: ``locustfile.py`` holds the users, ``run.py`` the one-command local run."""
