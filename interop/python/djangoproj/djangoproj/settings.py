"""Settings of the interop tests' Django project: django-celery-beat on
PostgreSQL (the test database comes from the environment)."""
import os

SECRET_KEY = "interop-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_celery_beat"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DJANGO_DB_NAME", "gocelery_test"),
        "USER": os.environ.get("DJANGO_DB_USER", "gocelery"),
        "PASSWORD": os.environ.get("DJANGO_DB_PASSWORD", "gocelery"),
        "HOST": os.environ.get("DJANGO_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DJANGO_DB_PORT", "5432"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CELERY_TIMEZONE = "UTC"
