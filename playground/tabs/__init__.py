"""One module per tab: its layout (`create_ui`) and its event wiring (`wire`)."""
