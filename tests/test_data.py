"""Data loading: the official MovieLens CSV layout built in a temp dir, and every bad input the loaders must reject."""
import numpy as np
import pandas as pd
import pytest
from eagle_nb.data import load_catalog, load_movielens_csv, build_catalog, describe_catalog, user_profile, enrich


def write_layout(folder, ratings=None, movies=None, tags=None):
    folder.mkdir(parents=True, exist_ok=True)
    movies = movies if movies is not None else pd.DataFrame({
        'movieId': [1, 2, 3, 4],
        'title': ['Toy Story (1995)', 'Heat (1995)', 'Usual Suspects, The (1995)', 'Never Rated (2001)'],
        'genres': ['Animation|Children|Comedy', 'Action|Crime|Thriller', 'Crime|Mystery|Thriller', 'Drama']})
    ratings = ratings if ratings is not None else pd.DataFrame({
        'userId': [1, 1, 2, 2, 3, 3, 3], 'movieId': [1, 2, 1, 3, 1, 2, 3],
        'rating': [4.0, 3.5, 5.0, 2.0, 3.0, 4.5, 5.0], 'timestamp': [10, 11, 12, 13, 14, 15, 16]})
    movies.to_csv(folder / 'movies.csv', index=False)
    ratings.to_csv(folder / 'ratings.csv', index=False)
    if tags is not None: tags.to_csv(folder / 'tags.csv', index=False)
    return folder


def test_official_layout_loads(tmp_path):
    tags = pd.DataFrame({'userId': [1, 2, 2], 'movieId': [2, 2, 3], 'tag': ['heist', 'Heist', 'twist ending'], 'timestamp': [1, 2, 3]})
    folder = write_layout(tmp_path / 'ml-mini', tags=tags)
    cat = load_catalog(folder)                              # by path, with the metadata join
    assert (cat.n_users, cat.n_items, len(cat.ratings)) == (3, 3, 7)   # the never-rated movie is dropped
    assert cat.movies.title.tolist() == ['Toy Story', 'Heat', 'Usual Suspects, The']
    assert cat.movies.year.tolist() == [1995, 1995, 1995]
    assert cat.movies.genres[0] == ['Animation', 'Children', 'Comedy']
    assert cat.movies.tags[1][0] == 'heist'                 # tags are lower-cased and counted
    assert cat.matrix().shape == (3, 3) and cat.matrix()[2, 2] == 5.0
    assert cat.meta_match_rate == 1.0 and 'Michael Mann' in cat.movies.director[1]
    descs = describe_catalog(cat)
    assert len(descs) == 3 and 'Directed by Michael Mann' in descs[1] and 'The Usual Suspects' in descs[2]
    assert all('\nStory: ' in d for d in descs) and 'heist' not in descs[1]   # facts and story; tags are not read
    assert 'rated 2 movies' in user_profile(cat, 0)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_catalog(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='not found'):
        load_movielens_csv(tmp_path / 'nope')


def test_folder_without_ratings_csv(tmp_path):
    folder = write_layout(tmp_path / 'x'); (folder / 'ratings.csv').unlink()
    with pytest.raises(FileNotFoundError, match='ratings.csv is missing'):
        load_catalog(folder)


def test_missing_columns_are_named(tmp_path):
    folder = write_layout(tmp_path / 'x', ratings=pd.DataFrame({'userId': [1], 'movieId': [1], 'score': [4.0]}))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rating'\]"):
        load_catalog(folder, metadata=False)
    folder = write_layout(tmp_path / 'y', movies=pd.DataFrame({'movieId': [1], 'name': ['Toy Story (1995)']}))
    with pytest.raises(ValueError, match='movies table lacks'):
        load_catalog(folder, metadata=False)


def test_empty_ratings_file(tmp_path):
    folder = write_layout(tmp_path / 'x', ratings=pd.DataFrame(columns=['userId', 'movieId', 'rating', 'timestamp']))
    with pytest.raises(ValueError, match='ratings table is empty'):
        load_catalog(folder, metadata=False)


def test_ratings_of_unknown_movies_only(tmp_path):
    folder = write_layout(tmp_path / 'x', ratings=pd.DataFrame({'userId': [1], 'movieId': [99], 'rating': [4.0], 'timestamp': [0]}))
    with pytest.raises(ValueError, match='no rating refers to a known movie'):
        load_catalog(folder, metadata=False)


def test_nan_ratings_rejected():
    movies = pd.DataFrame({'movie_id': [1], 'title': ['A'], 'year': [2000], 'genres': [['Drama']]})
    with pytest.raises(ValueError, match='NaN'):
        build_catalog('t', movies, pd.DataFrame({'user_id': [1], 'movie_id': [1], 'rating': [np.nan]}))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'ml-1b'"):
        load_catalog('ml-1b')


def test_writer_returning_wrong_count_is_an_error(tmp_path):
    cat = load_catalog(write_layout(tmp_path / 'x'), metadata=False)
    with pytest.raises(ValueError, match='returned 1 texts for 3 movies'):
        describe_catalog(cat, writer=lambda rows: ['only one'], writer_id='bad', cache=tmp_path / 'c')


def test_writer_empty_text_falls_back_to_template(tmp_path):
    cat = load_catalog(write_layout(tmp_path / 'x'), metadata=False)
    out = describe_catalog(cat, writer=lambda rows: ['' for _ in rows], writer_id='empty', cache=tmp_path / 'c')
    assert out == describe_catalog(cat)


def test_a_ratings_file_cut_short_is_refused(tmp_path):
    folder = write_layout(tmp_path / 'x')
    text = (folder / 'ratings.csv').read_text()
    (folder / 'ratings.csv').write_text(text[:-4])              # the last line loses its end (and its newline)
    with pytest.raises(ValueError, match='last line is cut short'):
        load_catalog(folder, metadata=False)
    (folder / 'ratings.csv').write_text(text)                   # the whole file loads
    assert len(load_catalog(folder, metadata=False).ratings) == 7


def test_movies_without_titles_are_refused(tmp_path):
    movies = pd.DataFrame({'movieId': [1, 2, 3], 'title': ['', '', 'Heat (1995)'], 'genres': ['Drama'] * 3})
    folder = write_layout(tmp_path / 'x', movies=movies)
    with pytest.raises(ValueError, match=r'movies.csv: line 2: movie 1 has an empty title \(2 such rows\)'):
        load_catalog(folder, metadata=False)
    movies.loc[1, 'title'] = 'Heat (1995)'                     # one untitled movie is refused too (it used to become "nan")
    with pytest.raises(ValueError, match=r'movies.csv: line 2: movie 1 has an empty title$'):
        load_catalog(write_layout(tmp_path / 'y', movies=movies), metadata=False)
    movies.loc[0, 'title'] = 'Toy Story (1995)'
    assert load_catalog(write_layout(tmp_path / 'z', movies=movies), metadata=False).n_items == 3


def test_ratings_of_unknown_movies_are_counted(tmp_path):
    ratings = pd.DataFrame({'userId': [1, 1, 2], 'movieId': [1, 99, 98], 'rating': [4.0, 3.0, 2.0]})
    cat = load_catalog(write_layout(tmp_path / 'x', ratings=ratings), metadata=False)
    assert (cat.n_items, len(cat.ratings), cat.unmatched) == (1, 1, 2)
