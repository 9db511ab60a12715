-- Each stream names the ladder (a file stem in `ladders/`) its broadcasts are transcoded with.
ALTER TABLE streams ADD COLUMN ladder TEXT NOT NULL DEFAULT 'default';
