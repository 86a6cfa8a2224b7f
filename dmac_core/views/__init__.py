"""Tables and figures for the pages (pandas and plotly; no streamlit)."""
