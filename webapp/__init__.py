"""SegBoard web app: the Streamlit team dashboard (calls only the worker service layer)."""
