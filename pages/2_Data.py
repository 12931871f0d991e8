"""Data: pick a built-in, downloadable or uploaded dataset, see what it holds, preview its samples,
upload your own data, and set the current graph's input from it ("Use with current graph")."""

import streamlit as st

from components import nav
from components.data import data_page
from studio.data import list_datasets

st.set_page_config(page_title="Data · Neural Studio", page_icon="🗂️", layout="wide")
nav.render()

# ---- which dataset --------------------------------------------------------------------------------
st.title("Data")
infos = {i.id: i for i in list_datasets()}
picked = data_page.select_dataset(infos)
info, options = data_page.choose_options(infos[picked])
data_page.show_message()
data_page.render_facts(info)

# ---- the current graph against this dataset --------------------------------------------------------
with st.container(border=True):
    data_page.render_fit(info, options)

# ---- load (downloading if needed) and preview --------------------------------------------------------
if data_page.needs_download(info):
    data_page.render_download(info)
elif (dataset := data_page.load_dataset(info, options)) is not None:
    st.subheader("Samples")
    data_page.render_samples(dataset, options)

# ---- uploads ------------------------------------------------------------------------------------------
st.subheader("Your data")
uploads = [i for i in infos.values() if i.source == "upload"]
data_page.render_uploads(uploads)
with st.expander("Upload a dataset", expanded=not uploads):
    data_page.render_upload_form()
