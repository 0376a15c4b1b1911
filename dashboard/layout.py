"""Rules for narrow windows: at 800 px or less nothing is cut.

Streamlit's own layout keeps a wide sidebar and lets long labels run out of their box;
these rules let the sidebar collapse, labels and buttons wrap, and tables scroll.
"""

from __future__ import annotations

import streamlit as st

NARROW_PX = 800

_CSS = f"""
<style>
/* Labels and button texts wrap instead of being cut with an ellipsis. */
[data-testid="stWidgetLabel"] p, [data-testid="stWidgetLabel"] div,
[data-testid="stCheckbox"] label p, [data-testid="stCheckbox"] label div,
.stButton button p, .stDownloadButton button p, [data-testid="stMarkdownContainer"] p {{
  white-space: normal !important;
  overflow-wrap: anywhere;
  text-overflow: clip !important;
}}
[data-testid="stSelectbox"] [data-baseweb="select"] div {{
  white-space: normal !important;
}}
@media (max-width: {NARROW_PX}px) {{
  /* Columns stack, so each control gets the whole width. */
  [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap !important; }}
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
    min-width: 100% !important; flex: 1 1 100% !important;
  }}
  [data-testid="stMainBlockContainer"] {{ padding-left: 1rem; padding-right: 1rem; }}
}}
</style>
"""


def narrow_window_rules() -> None:
    st.html(_CSS)
