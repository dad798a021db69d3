"""Reporting stage: report.json / report.md (`report`) and report.html (`html`, the plots), comparisons between
runs (`compare`) and the model card (`model_card`). Documents are rendered from the Jinja2 templates in
`templates/` (`templating`) from plain contexts (`context` for both reports); Markdown becomes HTML in one place
(`markdown`)."""
