"""The Data page's parts: the dataset picker, facts, fit, uploads (data_page) and the dataset previews (data_view)."""
