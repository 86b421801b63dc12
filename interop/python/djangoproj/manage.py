#!/usr/bin/env python
"""The interop tests' Django project: django-celery-beat's models only, on
the PostgreSQL database named by $DJANGO_DB_NAME."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
