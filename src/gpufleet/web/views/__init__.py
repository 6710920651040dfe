"""Views: builders of the pages' data and figures: pure functions of the services' answers (no requests here)."""
