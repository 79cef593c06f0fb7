"""Rebuild interp/data/facts.csv: hand-written factual prompts with one-token answers, kept only
where the unedited bundled model (SmolLM2-135M-Instruct) gets them right.

A candidate is kept when its answer (with its leading space) is exactly one token and the model's
greedy next token after the prompt is that token. So the bundled model scores 1.0 on the file
before any edit, and a factual-recall drop after an edit is damage the edit did. The candidates are
general knowledge written for this project; none has a gendered or pronoun answer.

    python benchmarks/make_facts.py            # writes interp/data/facts.csv, prints a summary
    python benchmarks/make_facts.py --dry-run  # prints what it would keep, per category
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp import capability  # noqa: E402
from interp.common.io import atomic_write  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "interp" / "data" / "facts.csv"
# Kept facts must beat the runner-up token by this many nats, so that float noise (another batch
# layout, a GPU kernel, another torch build) cannot flip the bundled model's 1.0 accuracy.
MIN_MARGIN = 0.1

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "Russia": "Moscow", "Egypt": "Cairo", "England": "London",
    "the United Kingdom": "London", "Greece": "Athens", "Portugal": "Lisbon",
    "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest",
    "the Czech Republic": "Prague", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Syria": "Damascus",
    "Lebanon": "Beirut", "Israel": "Jerusalem", "Saudi Arabia": "Riyadh", "China": "Beijing",
    "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "the Philippines": "Manila", "Indonesia": "Jakarta", "India": "Delhi",
    "Pakistan": "Islamabad", "Afghanistan": "Kabul", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Ethiopia": "Addis", "Ghana": "Accra", "Morocco": "Rabat", "Cuba": "Havana",
    "Mexico": "Mexico", "Canada": "Ottawa", "Australia": "Canberra", "Argentina": "Buenos",
    "Peru": "Lima", "Chile": "Santiago", "Colombia": "Bogotá", "Venezuela": "Caracas",
    "Ukraine": "Kyiv", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade",
    "Croatia": "Zagreb", "Switzerland": "Bern", "Scotland": "Edinburgh", "Wales": "Cardiff",
    "Iceland": "Reykjavik", "Nepal": "Kathmandu", "Bangladesh": "Dhaka", "Malaysia": "Kuala",
    "Singapore": "Singapore", "Jordan": "Amman", "Qatar": "Doha", "Tunisia": "Tunis",
    "Algeria": "Algiers", "Sudan": "Khartoum", "Uganda": "Kampala", "Zimbabwe": "Harare",
    "Brazil": "Brasília", "Uruguay": "Montevideo", "Ecuador": "Quito", "New Zealand": "Wellington",
}

LANGUAGES = {
    "Brazil": "Portuguese", "Portugal": "Portuguese", "France": "French", "Germany": "German",
    "Italy": "Italian", "Spain": "Spanish", "Mexico": "Spanish", "Argentina": "Spanish",
    "Japan": "Japanese", "China": "Chinese", "Russia": "Russian", "Greece": "Greek",
    "Turkey": "Turkish", "Poland": "Polish", "the Netherlands": "Dutch", "Sweden": "Swedish",
    "Norway": "Norwegian", "Denmark": "Danish", "Finland": "Finnish", "Egypt": "Arabic",
    "Saudi Arabia": "Arabic", "Iran": "Persian", "Israel": "Hebrew", "Korea": "Korean",
    "Vietnam": "Vietnamese", "Thailand": "Thai", "Hungary": "Hungarian", "Austria": "German",
    "England": "English", "Australia": "English", "Ukraine": "Ukrainian", "Romania": "Romanian",
    "Indonesia": "Indonesian", "Chile": "Spanish", "Peru": "Spanish", "Colombia": "Spanish",
}

CURRENCIES = {
    "Japan": "yen", "the United States": "dollar", "the United Kingdom": "pound",
    "India": "rupee", "Russia": "ruble", "China": "yuan", "Mexico": "peso", "Germany": "euro",
    "France": "euro", "Italy": "euro", "Spain": "euro", "Switzerland": "franc",
    "Canada": "dollar", "Australia": "dollar", "South Korea": "won", "Brazil": "real",
    "Sweden": "krona", "Poland": "zloty", "Turkey": "lira", "South Africa": "rand",
}

CHEMICAL_SYMBOLS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "sodium": "Na", "potassium": "K",
    "oxygen": "O", "hydrogen": "H", "carbon": "C", "nitrogen": "N", "helium": "He",
    "copper": "Cu", "lead": "Pb", "tin": "Sn", "mercury": "Hg", "calcium": "Ca",
    "sulfur": "S", "chlorine": "Cl", "zinc": "Zn", "uranium": "U", "neon": "Ne",
    "magnesium": "Mg", "aluminium": "Al", "silicon": "Si", "phosphorus": "P", "nickel": "Ni",
    "platinum": "Pt", "fluorine": "F", "iodine": "I", "argon": "Ar", "lithium": "Li",
    "cobalt": "Co", "titanium": "Ti", "tungsten": "W", "bromine": "Br", "manganese": "Mn",
}

OPPOSITES = {
    "hot": "cold", "up": "down", "big": "small", "light": "dark", "fast": "slow",
    "open": "closed", "rich": "poor", "happy": "sad", "wet": "dry", "early": "late",
    "old": "new", "high": "low", "hard": "soft", "full": "empty", "strong": "weak",
    "left": "right", "black": "white", "day": "night", "good": "bad", "in": "out",
    "inside": "outside", "top": "bottom", "win": "lose", "love": "hate", "true": "false",
    "yes": "no", "push": "pull", "thick": "thin", "long": "short", "heavy": "light",
    "north": "south", "east": "west", "begin": "end", "buy": "sell", "before": "after",
    "above": "below", "clean": "dirty", "cheap": "expensive", "loud": "quiet", "near": "far",
    "safe": "dangerous", "sweet": "sour", "friend": "enemy", "question": "answer",
    "wide": "narrow", "deep": "shallow", "sunrise": "sunset", "summer": "winter",
    "young": "old", "tall": "short", "rough": "smooth", "alive": "dead", "first": "last",
    "asleep": "awake", "give": "take", "remember": "forget", "laugh": "cry",
    "increase": "decrease", "maximum": "minimum", "positive": "negative", "import": "export",
    "visible": "invisible", "possible": "impossible", "correct": "incorrect", "legal": "illegal",
    "success": "failure", "war": "peace", "sharp": "dull", "tight": "loose",
    "entrance": "exit", "floor": "ceiling", "odd": "even", "multiply": "divide",
    "horizontal": "vertical", "ancient": "modern", "private": "public", "always": "never",
    "everything": "nothing", "same": "different", "majority": "minority", "victory": "defeat",
    "input": "output", "upstairs": "downstairs", "plus": "minus", "arrive": "leave",
}

ANIMAL_SOUNDS = [
    ("A cow goes", "moo"), ("A dog goes", "woof"), ("A cat goes", "meow"),
    ("A duck goes", "quack"), ("A sheep goes", "baa"), ("A pig goes", "oink"),
    ("A snake goes", "hiss"), ("An owl goes", "hoot"), ("A lion", "roars"),
    ("Dogs", "bark"), ("Cats", "meow"), ("Bees", "buzz"), ("Wolves", "howl"),
    ("Horses", "neigh"), ("Lions", "roar"), ("Birds", "sing"), ("Frogs", "croak"),
]

COLOURS = [
    ("The sky on a clear day is", "blue"), ("The color of grass is", "green"),
    ("Ripe bananas are", "yellow"), ("Snow is", "white"), ("Coal is", "black"),
    ("The color of blood is", "red"), ("Ripe tomatoes are", "red"),
    ("The color of an orange is", "orange"), ("Most leaves in summer are", "green"),
    ("The colour of milk is", "white"), ("A lemon is", "yellow"),
    ("Mixing blue and yellow makes", "green"), ("Mixing red and white makes", "pink"),
    ("Mixing black and white makes", "grey"), ("Mixing red and blue makes", "purple"),
    ("The color of chocolate is", "brown"), ("The sun appears", "yellow"),
]

PEOPLE_COUNTRIES = [  # "<name> was a <role> from" -> country
    ("Albert Einstein", "physicist", "Germany"), ("Leonardo da Vinci", "painter", "Italy"),
    ("Napoleon", "leader", "France"), ("William Shakespeare", "writer", "England"),
    ("Mozart", "composer", "Austria"), ("Confucius", "philosopher", "China"),
    ("Gandhi", "leader", "India"), ("Pablo Picasso", "painter", "Spain"),
    ("Leo Tolstoy", "writer", "Russia"), ("Charles Darwin", "scientist", "England"),
    ("Isaac Newton", "scientist", "England"), ("Galileo Galilei", "astronomer", "Italy"),
    ("Aristotle", "philosopher", "Greece"), ("Michelangelo", "sculptor", "Italy"),
    ("Beethoven", "composer", "Germany"), ("Victor Hugo", "writer", "France"),
    ("Dante Alighieri", "poet", "Italy"), ("Frida Kahlo", "painter", "Mexico"),
    ("Fidel Castro", "leader", "Cuba"), ("Frédéric Chopin", "composer", "Poland"),
    ("Fyodor Dostoevsky", "writer", "Russia"), ("Miguel de Cervantes", "writer", "Spain"),
    ("Goethe", "writer", "Germany"), ("Tchaikovsky", "composer", "Russia"),
    ("Marie Curie", "scientist", "Poland"), ("Hokusai", "painter", "Japan"),
    ("Vivaldi", "composer", "Italy"), ("Copernicus", "astronomer", "Poland"),
    ("Hans Christian Andersen", "writer", "Denmark"), ("Henrik Ibsen", "playwright", "Norway"),
    ("Jean Sibelius", "composer", "Finland"), ("Jorge Luis Borges", "writer", "Argentina"),
    ("Pablo Neruda", "poet", "Chile"), ("Rabindranath Tagore", "poet", "India"),
    ("Homer", "poet", "Greece"), ("Claude Monet", "painter", "France"),
]

FOOD_ORIGINS = [
    ("Sushi is a dish from", "Japan"), ("Pizza is a dish from", "Italy"),
    ("Tacos are a dish from", "Mexico"), ("Paella is a dish from", "Spain"),
    ("Croissants are a pastry from", "France"), ("Kimchi is a dish from", "Korea"),
    ("Pasta is a food from", "Italy"), ("Curry is a dish from", "India"),
    ("Goulash is a dish from", "Hungary"), ("Borscht is a soup from", "Ukraine"),
    ("Feta is a cheese from", "Greece"), ("Champagne is a wine from", "France"),
    ("Tea became popular in England after it arrived from", "China"),
    ("Dim sum is a dish from", "China"), ("Pad thai is a dish from", "Thailand"),
    ("Pho is a soup from", "Vietnam"), ("Baklava is a dessert from", "Turkey"),
]

PLANETS = [
    ("The largest planet in our solar system is", "Jupiter"),
    ("The planet closest to the sun is", "Mercury"),
    ("The planet known as the Red Planet is", "Mars"),
    ("The planet with the famous rings is", "Saturn"),
    ("We live on the planet", "Earth"), ("The third planet from the sun is", "Earth"),
    ("The hottest planet in our solar system is", "Venus"),
    ("The natural satellite of the Earth is the", "Moon"),
    ("The star at the centre of our solar system is the", "Sun"),
    ("The second planet from the sun is", "Venus"),
    ("The fourth planet from the sun is", "Mars"),
    ("The fifth planet from the sun is", "Jupiter"),
    ("The sixth planet from the sun is", "Saturn"),
    ("The galaxy we live in is called the Milky", "Way"),
]

NUMBERS = [
    ("Two plus two is equal to", "four"), ("One plus one is equal to", "two"),
    ("Three plus three is equal to", "six"), ("Five plus five is equal to", "ten"),
    ("Ten minus one is equal to", "nine"), ("Two times three is equal to", "six"),
    ("Four plus four is equal to", "eight"), ("Three times three is equal to", "nine"),
    ("Ten plus ten is equal to", "twenty"), ("Six minus four is equal to", "two"),
    ("One, two, three, four,", "five"), ("Five, six, seven,", "eight"),
    ("two, four, six,", "eight"), ("ten, twenty, thirty,", "forty"),
    ("A week has seven", "days"), ("A dozen is", "twelve"),
    ("The number of days in a week is", "seven"), ("A triangle has three", "sides"),
    ("A spider has eight", "legs"), ("A triangle has", "three"), ("A square has", "four"),
    ("The number of continents on Earth is", "seven"), ("A year has twelve", "months"),
    ("A century is one hundred", "years"), ("An hour has sixty", "minutes"),
    ("A minute has sixty", "seconds"), ("A day has twenty-four", "hours"),
    ("First, second,", "third"), ("A pair means", "two"),
    ("The square root of nine is", "three"), ("Half of ten is", "five"),
]

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
SEQUENCES = (
    [(f"Days of the week: {a}, {b},", c) for a, b, c in zip(DAYS, DAYS[1:], DAYS[2:])]
    + [(f"Months of the year: {a}, {b},", c) for a, b, c in zip(MONTHS, MONTHS[1:], MONTHS[2:])]
    + [("The colors of the rainbow are red, orange,", "yellow"), ("A, B, C,", "D"),
       ("X, Y,", "Z"), ("The four seasons are spring, summer,", "autumn"),
       ("Alpha, beta,", "gamma"), ("Gold, silver and", "bronze")]
)

GEOGRAPHY = [
    ("Kenya is a country in", "Africa"), ("France is a country in", "Europe"),
    ("Japan is a country in", "Asia"), ("Brazil is a country in", "South"),
    ("Egypt is a country in", "Africa"), ("India is a country in", "Asia"),
    ("Germany is a country in", "Europe"), ("Nigeria is a country in", "Africa"),
    ("Thailand is a country in", "Asia"), ("Italy is a country in", "Europe"),
    ("The Eiffel Tower is in", "Paris"), ("The Colosseum is in", "Rome"),
    ("Big Ben is in", "London"), ("The Statue of Liberty is in New", "York"),
    ("The pyramids of Giza are in", "Egypt"), ("The Great Wall is a wall in", "China"),
    ("The Taj Mahal is in", "India"), ("The Kremlin is in", "Moscow"),
    ("The Acropolis is in", "Athens"), ("The largest ocean on Earth is the", "Pacific"),
    ("The longest river in Africa is the", "Nile"),
    ("The largest desert in Africa is the", "Sahara"),
    ("The highest mountain in the world is Mount", "Everest"),
    ("The Amazon rainforest is mostly in", "Brazil"), ("Sydney is a city in", "Australia"),
    ("Toronto is a city in", "Canada"), ("Munich is a city in", "Germany"),
    ("Barcelona is a city in", "Spain"), ("Venice is a city in", "Italy"),
    ("Osaka is a city in", "Japan"), ("Mumbai is a city in", "India"),
    ("Istanbul is a city in", "Turkey"), ("Shanghai is a city in", "China"),
    ("Chicago is a city in the United", "States"), ("Lyon is a city in", "France"),
    ("Kyoto is a city in", "Japan"), ("Manchester is a city in", "England"),
    ("Rio de Janeiro is a city in", "Brazil"), ("Seville is a city in", "Spain"),
]

SCIENCE = [
    ("Water is made of hydrogen and", "oxygen"), ("Plants absorb carbon", "dioxide"),
    ("Water freezes at zero degrees", "Celsius"), ("The chemical formula of water is", "H"),
    ("The force that pulls objects toward the Earth is called", "gravity"),
    ("Plants make food from sunlight through", "photos"),
    ("The study of living things is called", "biology"),
    ("The study of the stars is called", "astronomy"),
    ("Humans breathe in", "oxygen"), ("The hardest natural substance is", "diamond"),
    ("Ice is frozen", "water"), ("The heart pumps", "blood"),
    ("The organ that pumps blood is the", "heart"), ("We see with our", "eyes"),
    ("We hear with our", "ears"), ("We smell with our", "nose"),
    ("The largest organ of the human body is the", "skin"),
    ("The closest star to the Earth is the", "Sun"), ("Sound travels in", "waves"),
    ("Electricity flows through a copper", "wire"), ("A compass needle points", "north"),
    ("Bees make", "honey"), ("Cows give", "milk"), ("Hens lay", "eggs"),
    ("Caterpillars turn into", "butterflies"), ("Tadpoles grow into", "frogs"),
    ("Spiders spin", "webs"), ("Fish breathe through their", "gills"),
    ("Birds have feathers and", "wings"), ("The largest mammal on Earth is the blue", "whale"),
    ("The fastest land animal is the", "cheetah"), ("The tallest animal is the", "giraffe"),
    ("Pandas mostly eat", "bamboo"), ("Koalas live in", "Australia"),
    ("Penguins live in", "Antarctica"), ("Camels live in the", "desert"),
    ("Bees make honey and cows make", "milk"), ("Cows make milk and bees make", "honey"),
    ("The fruit that keeps the doctor away is an", "apple"),
    ("The gas that plants release is", "oxygen"),
    ("The boiling point of water is one hundred degrees", "Celsius"),
    ("A frog is an", "amphibian"), ("A whale is a", "mammal"), ("A snake is a", "reptile"),
    ("The metal that is liquid at room temperature is", "mercury"),
    ("The smallest unit of life is the", "cell"), ("DNA is found in the nucleus of the", "cell"),
    ("The human body has two hundred and six", "bones"),
    ("Light travels faster than", "sound"),
]

WORDS = [
    ("The plural of mouse is", "mice"), ("The plural of child is", "children"),
    ("The plural of foot is", "feet"), ("The plural of tooth is", "teeth"),
    ("The plural of goose is", "geese"), ("The plural of person is", "people"),
    ("A baby cat is called a", "kitten"), ("A baby dog is called a", "puppy"),
    ("A baby sheep is called a", "lamb"), ("A baby cow is called a", "calf"),
    ("A baby frog is called a", "tadpole"), ("A baby horse is called a", "foal"),
    ("A group of wolves is called a", "pack"), ("A group of fish is called a", "school"),
    ("A group of cows is called a", "herd"), ("A group of sheep is called a", "flock"),
    ("A doctor works in a", "hospital"), ("A teacher works in a", "school"),
    ("A chef works in a", "kitchen"), ("A pilot flies a", "plane"),
    ("Books are kept in a", "library"), ("Bread is baked in an", "oven"),
    ("We write with a", "pen"), ("We sleep in a", "bed"), ("We cut paper with", "scissors"),
    ("Rain falls from the", "sky"), ("The sun rises in the", "east"),
    ("The sun sets in the", "west"), ("Christmas is celebrated in", "December"),
    ("The season after winter is", "spring"), ("The season after summer is", "autumn"),
    ("Thunder often follows", "lightning"), ("Peanut butter and", "jelly"),
    ("Salt and", "pepper"), ("Fish and", "chips"), ("Bread and", "butter"),
    ("Knife and", "fork"), ("Rock, paper,", "scissors"),
]

INVENTIONS = [
    ("The Mona Lisa was painted by Leonardo da", "Vinci"),
    ("The theory of relativity was developed by Albert", "Einstein"),
    ("The telephone was invented by Alexander Graham", "Bell"),
    ("Romeo and Juliet was written by William", "Shakespeare"),
    ("The light bulb is credited to Thomas", "Edison"),
    ("The Mona Lisa hangs in the", "Louvre"),
    ("The Olympic Games began in ancient", "Greece"),
    ("The first person to walk on the moon was Neil", "Armstrong"),
    ("The composer of the Fifth Symphony was Ludwig van", "Beethoven"),
    ("Harry Potter was written by J. K.", "Rowling"),
    ("The author of the Origin of Species was Charles", "Darwin"),
    ("The Sistine Chapel ceiling was painted by", "Michelangelo"),
]


def candidates() -> pd.DataFrame:
    """Every hand-written candidate as (prompt, answer, category); answers get a leading space."""
    rows = [(f"The capital of {c} is", a, "capital") for c, a in CAPITALS.items()]
    rows += [(f"People in {c} speak", a, "language") for c, a in LANGUAGES.items()]
    rows += [(f"The currency of {c} is the", a, "currency") for c, a in CURRENCIES.items()]
    rows += [(f"The chemical symbol for {e} is", s, "chemical_symbol")
             for e, s in CHEMICAL_SYMBOLS.items()]
    rows += [(f"The opposite of {w} is", a, "opposite") for w, a in OPPOSITES.items()]
    rows += [(f"{p} was a {r} from", c, "person_country") for p, r, c in PEOPLE_COUNTRIES]
    for name, pairs in (("animal_sound", ANIMAL_SOUNDS), ("colour", COLOURS), ("planet", PLANETS),
                        ("number", NUMBERS), ("sequence", SEQUENCES), ("food", FOOD_ORIGINS),
                        ("geography", GEOGRAPHY),
                        ("science", SCIENCE), ("word", WORDS), ("culture", INVENTIONS)):
        rows += [(p, a, name) for p, a in pairs]
    frame = pd.DataFrame(rows, columns=["prompt", "answer", "category"])
    frame["answer"] = " " + frame["answer"]
    return frame.drop_duplicates("prompt").reset_index(drop=True)


def keep_correct(model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, all candidates scored): kept are one-token answers that are the greedy next token
    by at least MIN_MARGIN nats."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-token answers are expected among candidates
        one = capability.with_answer_ids(frame, model)
    scored = capability.recall_items(model, one)
    kept = scored[scored["margin"] >= MIN_MARGIN][["prompt", "answer", "category"]]
    return kept.reset_index(drop=True), scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    args = parser.parse_args()
    model = interp.load_model()
    frame = candidates()
    kept, scored = keep_correct(model, frame)
    right = int(scored["correct"].sum())
    print(f"{len(frame)} candidates, {len(scored)} with one-token answers, {right} right, "
          f"{len(kept)} kept (margin >= {MIN_MARGIN} nats)")
    scored["kept"] = scored["margin"] >= MIN_MARGIN
    summary = scored.groupby("category").agg(one_token=("kept", "size"),
                                             right=("correct", "sum"), kept=("kept", "sum"))
    print(summary.to_string())
    if not args.dry_run:
        with atomic_write(OUT) as f:
            kept.to_csv(f, index=False, quoting=csv.QUOTE_ALL)  # leading spaces visible
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
