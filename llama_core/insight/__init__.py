"""Run records and what is drawn from them: figures, reports, the logit lens, scoring."""
