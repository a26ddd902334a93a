"""Every output shape in one place: the JSON of verdicts and store records, the gate's JSON,
JUnit, Markdown and ResultsDB results, and the HTML reports (Jinja2 templates)."""
