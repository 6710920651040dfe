"""Reports: thin shells that turn service data into documents (HTML with plots)."""
