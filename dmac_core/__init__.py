"""DMac Learning Workbench core: everything that is not UI (no streamlit import here)."""
