"""The fixed intent taxonomy of ../shared/DESIGN.md (a leaf module: serving imports it cheaply)."""

INTENTS = (
    "destination_recommendation",
    "destination_info",
    "best_time_to_visit",
    "weather",
    "budget_planning",
    "visa_requirements",
    "transportation",
    "accommodation",
    "activities",
    "food_and_cuisine",
    "safety_and_health",
    "itinerary_planning",
    "currency_exchange",
    "greeting",
    "thanks",
    "goodbye",
    "out_of_scope",
)
OUT_OF_SCOPE = "out_of_scope"
