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


# Streamlit collapses its sidebar by itself only on phone-sized windows; at NARROW_PX or
# less it takes a third of the width and cuts labels. Collapse it once per page load
# (the person can open it again; it then stays open).
_COLLAPSE = f"""<script>
(function collapse(tries) {{
  if (window.__recoverySidebarDone || window.innerWidth > {NARROW_PX}) return;
  const bar = document.querySelector("[data-testid='stSidebar']");
  const button = document.querySelector("[data-testid='stSidebarCollapseButton'] button");
  if (bar && bar.getAttribute("data-collapsed") === "true") {{ window.__recoverySidebarDone = true; return; }}
  if (bar && button) {{ button.click(); window.__recoverySidebarDone = true; return; }}
  if (tries > 0) setTimeout(() => collapse(tries - 1), 100);
}})(50);
</script>"""


def narrow_window_rules() -> None:
    st.html(_CSS)
    st.html(_COLLAPSE, unsafe_allow_javascript=True)
