"""``python manage.py <command>``: one module per command."""
