"""Reports: tables (markdown/CSV), figures (png), listenable audio, the HTML report. Every write is atomic."""
