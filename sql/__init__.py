"""Reporting views, one .sql file each; installed as package data (see etl/views.py)."""
