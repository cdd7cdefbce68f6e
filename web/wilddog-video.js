// placeholder: the browser SDK (issue 5)
