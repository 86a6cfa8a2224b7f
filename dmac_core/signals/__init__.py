"""More signal per analyst minute: a leaderboard from blind votes (:mod:`.leaderboard`, fitted
by :mod:`.bradley_terry`), an LLM judge checked against analysts (:mod:`.judge`,
:mod:`.judge_agreement`), agreement between analysts (:mod:`.agreement`) and a second-opinion
queue that makes that agreement measurable (:mod:`.second_opinion`)."""
