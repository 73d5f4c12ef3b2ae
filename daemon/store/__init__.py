"""The database: models, opening and migrating, raw message bytes, prepared statements, job runs, claims, retention and backup."""
