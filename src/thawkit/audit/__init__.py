"""The data audit: leakage, duplicates, label issues, outliers and unusable images of a folder
(`thawkit audit data.root=...`, thawkit.audit.command)."""
