"""Reports comparing methods: the jobs, the pure aggregation into tables, the files written."""
