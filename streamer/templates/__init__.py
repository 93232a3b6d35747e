"""Template tiles: their files (:mod:`.tiles`) and how Blink builds them from exposures (:mod:`.build`)."""
